"""`toolkit bench`: reference loads measured against what the GPU class should reach."""
