"""The cache: memory over disk (tiers.py), each layer bounded by bytes (lru.py)."""
