"""The report's one stylesheet, inline in the page: full width, a grid of node cards that folds to one
column on a phone, light and dark (the reader's `prefers-color-scheme`), no fonts or files fetched."""

CSS = """
:root{--bg:#f6f7f9;--fg:#1b1f24;--muted:#5b6470;--card:#fff;--line:#d8dde3;--head:#eef1f4;
--ok:#2e7d32;--ok-bg:#e3f2e5;--warn:#b26a00;--warn-bg:#fff4cc;--bad:#c62828;--bad-bg:#fbe0e0;
--unk:#6a1b9a;--unk-bg:#eee3f5;--track:#e6e9ed;--floor:#1b1f24}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e6e9ed;--muted:#9aa4b0;--card:#181c22;
--line:#2c333c;--head:#20262e;--ok:#66bb6a;--ok-bg:#1d3321;--warn:#ffca28;--warn-bg:#3a3115;
--bad:#ef5350;--bad-bg:#3d1c1c;--unk:#ce93d8;--unk-bg:#2f2236;--track:#2c333c;--floor:#f5f5f5}}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;
padding:20px clamp(12px,3vw,40px);background:var(--bg);color:var(--fg);line-height:1.4}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 10px;padding-bottom:4px;
border-bottom:2px solid var(--line)}h3{font-size:16px;margin:0 0 6px}h4{font-size:14px;margin:12px 0 4px}
.meta{color:var(--muted);font-size:13px;margin:2px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;
border-top:6px solid var(--line)}
.card.ok{border-top-color:var(--ok)}.card.warn{border-top-color:var(--warn)}
.card.bad{border-top-color:var(--bad)}.card.unk{border-top-color:var(--unk)}
.card-head{display:flex;justify-content:space-between;align-items:baseline;gap:8px;flex-wrap:wrap}
.pill{display:inline-block;padding:1px 10px;border-radius:12px;font-weight:600;font-size:13px}
.pill.ok{background:var(--ok-bg);color:var(--ok)}.pill.warn{background:var(--warn-bg);color:var(--warn)}
.pill.bad{background:var(--bad-bg);color:var(--bad)}.pill.unk{background:var(--unk-bg);color:var(--unk)}
.figure{margin:8px 0}.figure .name{font-size:13px;display:flex;justify-content:space-between;gap:8px;
flex-wrap:wrap}.figure .name b{font-variant-numeric:tabular-nums}
.bar{position:relative;height:14px;background:var(--track);border-radius:4px;margin-top:3px}
.bar .fill{position:absolute;left:0;top:0;bottom:0;border-radius:4px;background:#2e7d32}
.bar .fill.warn{background:#f9a825}.bar .fill.fail,.bar .fill.bad{background:#c62828}
.bar .fill.over{border-right:4px double var(--card)}
.bar .floor{position:absolute;top:-3px;bottom:-3px;width:0;border-left:2px dashed var(--floor)}
.checks{margin:4px 0 0;padding-left:18px;font-size:13px}.checks li{margin:2px 0}
table{border-collapse:collapse;margin:6px 0 14px;background:var(--card);font-size:14px}
td,th{border:1px solid var(--line);padding:4px 8px;vertical-align:top}
th{background:var(--head);text-align:left}th a{color:inherit}td.n{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
td.ok{background:var(--ok-bg)}td.warn{background:var(--warn-bg)}td.bad{background:var(--bad-bg)}
td.unk{background:var(--unk-bg)}
.scroll{overflow-x:auto;max-width:100%}
.sorted{display:none}.sorted:target{display:block}.sorted:target~.default{display:none}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,380px),1fr));gap:12px}
figure.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
figure.chart figcaption{font-size:13px;margin-bottom:4px}
img{max-width:100%;height:auto;background:#fff;border-radius:4px;display:block}
.node-block{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;
margin:0 0 14px}
a{color:#1565c0}@media (prefers-color-scheme:dark){a{color:#90caf9}}
@media (max-width:600px){body{padding:12px}td,th{padding:3px 5px;font-size:13px}h1{font-size:22px}}
"""
