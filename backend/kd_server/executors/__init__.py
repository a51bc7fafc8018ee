"""Where the queue's jobs run (the queue's `Worker`s; see docs/scale-out.md).

- `local`: one worker per device of this server (`--device cuda:0 --device cuda:1`,
  or `all`), each with its own engine and model cache.
- `ray_serve`: workers on other machines, as replicas of a Ray Serve deployment; the
  gateway (this server: queue, fairness, events, results, auth) stays here.

The queue decides which job runs next and on which free worker; a worker only runs
what it is handed. Nothing here changes the protocol clients see.
"""
