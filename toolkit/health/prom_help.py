"""The HELP text of every metric `toolkit health` writes, by hand: what the number is, in which unit, and
what its states mean. A metric missing here is a test failure (tests/test_health_outputs.py)."""

from __future__ import annotations

_STATES = "0 ok, 1 warning, 2 critical, 3 unknown (Nagios codes)"

HELP = {
    # the report itself
    "toolkit_check_status": f"Status of each check: {_STATES}.",
    "toolkit_health_status": f"Worst status of the whole report: {_STATES}.",
    "toolkit_up": "1 when the collector could read its source, 0 when it could not.",
    "toolkit_collector_duration_seconds": "Time each collector took, in seconds.",
    "toolkit_scrape_duration_seconds": "Time the whole collection took, in seconds.",
    "toolkit_last_run_timestamp_seconds": "When the report was collected, as Unix time in seconds.",
    # BMC (IPMI and Redfish)
    "toolkit_bmc_reachable": "1 when the BMC answered within the deadline, 0 when it did not.",
    "toolkit_bmc_sensor_state": f"Status of each BMC sensor: {_STATES}.",
    "toolkit_bmc_temperature_celsius": "BMC temperature sensor reading, in degrees Celsius.",
    "toolkit_bmc_fan_speed_rpm": "BMC fan sensor reading, in revolutions per minute.",
    "toolkit_bmc_fan_speed_ratio": "BMC fan duty where the BMC reports percent, as a ratio 0-1.",
    "toolkit_bmc_voltage_volts": "BMC voltage sensor reading, in volts.",
    "toolkit_bmc_power_watts": "Power drawn now (chassis, or one supply's input) per the BMC, in watts.",
    "toolkit_bmc_power_capacity_watts": "A power supply's rated capacity as the BMC reports it, in watts.",
    "toolkit_bmc_current_amperes": "BMC current sensor reading, in amperes.",
    "toolkit_bmc_chassis_power_on": "1 when the BMC reports the chassis powered on.",
    "toolkit_bmc_sel_entries": "Entries in the BMC's event logs that were read.",
    "toolkit_bmc_log_entries": "Entries read from each BMC event log.",
    # GPUs (NVIDIA through NVML, AMD through amdsmi / amd-smi)
    "toolkit_gpus": "Number of GPUs the driver reports.",
    "toolkit_gpu_driver_info": "The GPU driver's version (label), always 1.",
    "toolkit_gpu_temperature_celsius": "GPU core temperature, in degrees Celsius.",
    "toolkit_gpu_memory_temperature_celsius": "GPU memory (HBM) temperature, in degrees Celsius.",
    "toolkit_gpu_power_watts": "GPU power draw, in watts.",
    "toolkit_gpu_power_limit_watts": "GPU power limit in force, in watts.",
    "toolkit_gpu_memory_used_bytes": "GPU memory in use, in bytes.",
    "toolkit_gpu_memory_total_bytes": "GPU memory in all, in bytes.",
    "toolkit_gpu_utilization_ratio": "GPU compute utilisation over the driver's last sample period, 0-1.",
    "toolkit_gpu_sm_clock_hertz": "GPU streaming-multiprocessor clock, in hertz.",
    "toolkit_gpu_memory_clock_hertz": "GPU memory clock, in hertz.",
    "toolkit_gpu_clock_event_active": "1 when a clock-event (throttle) reason is active, by reason.",
    "toolkit_gpu_ecc_errors_total": "ECC errors the driver counted, by kind and scope.",
    "toolkit_gpu_remapped_rows_total": "Memory rows remapped, by cause (correctable/uncorrectable).",
    "toolkit_gpu_row_remap_pending": "1 when a row remapping waits for a GPU reset.",
    "toolkit_gpu_row_remap_failure": "1 when a row remapping failed (the GPU needs service).",
    "toolkit_gpu_retired_pages_total": "Memory pages retired, by cause (single-bit/double-bit).",
    "toolkit_gpu_retired_pages_pending": "1 when a page retirement waits for a reboot.",
    "toolkit_gpu_pcie_link_generation": "Current PCIe link generation.",
    "toolkit_gpu_pcie_link_generation_max": "Highest PCIe link generation the GPU and slot support.",
    "toolkit_gpu_pcie_link_width": "Current PCIe link width, in lanes.",
    "toolkit_gpu_pcie_link_width_max": "Widest PCIe link the GPU and slot support, in lanes.",
    "toolkit_gpu_pcie_replay_total": "PCIe replays the GPU counted since its reset (link-layer retries).",
    "toolkit_gpu_persistence_mode": "1 when persistence mode is on.",
    "toolkit_gpu_fan_speed_ratio": "GPU fan speed as a ratio of its maximum, 0-1.",
    "toolkit_gpu_xid_last_code": "The last XID code the kernel logged for the GPU this boot (0 when none).",
    "toolkit_gpu_nvlink_links_active": "NVLink links that are up (the GPU's check names those down).",
    "toolkit_gpu_fabric_state": "NVSwitch fabric: 0 unsupported, 1 not started, 2 in progress, 3 completed.",
    "toolkit_gpu_recovery_action": "Recovery asked for: 0 none, 1 reset, 2 reboot, 3 drain and reset.",
    # Docker
    "toolkit_docker_up": "1 when the Docker engine answers.",
    "toolkit_docker_container_running": "1 when the named container runs.",
    # the system
    "toolkit_memory_available_bytes": "Memory available to new programs, in bytes.",
    "toolkit_filesystem_free_bytes": "Free space on the filesystem, in bytes.",
    "toolkit_load1": "1-minute load average.",
    # Qdrant
    "toolkit_qdrant_up": "1 when Qdrant answers /healthz.",
    "toolkit_qdrant_ready": "1 when Qdrant answers /readyz (all shards ready).",
    "toolkit_qdrant_info": "Qdrant's version (label), always 1.",
    "toolkit_qdrant_collections": "Number of Qdrant collections.",
    "toolkit_qdrant_collection_status": "Qdrant collection status: 0 green, 1 yellow/grey, 2 red, 3 unknown.",
    "toolkit_qdrant_collection_points": "Points in each Qdrant collection.",
    "toolkit_qdrant_gpu_indexing_enabled": "1 when Qdrant indexes on a GPU (telemetry lists GPUs).",
    "toolkit_qdrant_storage_used_bytes": "Disk space used under Qdrant's storage folder, in bytes.",
    # the model server (llama.cpp, Ollama, OpenAI-compatible)
    "toolkit_serving_up": "1 when the model server answers (llama.cpp /health, Ollama /api/version).",
    "toolkit_serving_model_loaded": "1 for the model the server serves (label model).",
    "toolkit_serving_models_loaded": "Number of models Ollama holds in memory (/api/ps).",
    "toolkit_serving_slots_busy": "llama.cpp slots processing a request (/slots).",
    "toolkit_serving_requests_deferred": "Requests waiting for a free llama.cpp slot (/metrics).",
    "toolkit_serving_gpu_share": "Share of an Ollama model in GPU memory (size_vram / size, 0-1).",
    "toolkit_serving_requests_running": "Requests in progress on a vLLM server (/metrics).",
    "toolkit_serving_requests_waiting": "Requests queued on a vLLM server (/metrics).",
}
