"""The pure domain core: history events, runtime state, the applier and the
projections. Synchronous, no I/O; imports nothing from store/, engine/ or service/."""
