"""Our own protocol, v1 (docs/protocol.md): jobs, events, models, health.

`jobs`, `system` and `events` are routers; `schemas` the published models;
`convert` turns a job body into the engine's request; `wire` turns typed job
events and views into messages.
"""
