"""Hook implementations that ship with the core (registered before any plugin)."""
