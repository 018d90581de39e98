"""Redis as a shared cache and bus: one key table, guarded calls, lease, purges, aliases."""
