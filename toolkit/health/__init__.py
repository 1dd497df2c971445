"""`toolkit health`: collectors (GPU, BMC, Docker, system) produce checks; outputs render them."""
