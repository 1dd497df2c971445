"""`toolkit report`: stored results as one self-contained HTML file."""
