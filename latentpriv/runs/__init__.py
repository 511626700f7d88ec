"""Commands as runs over files: the batch engine and the tasks it runs.

* :mod:`latentpriv.runs.engine` – folder runs: sharding over torchrun ranks, verified resume,
  ``results.jsonl``, SIGTERM (``run_batch``, ``run_cli``).
* :mod:`latentpriv.runs.invert` – the invert task (:class:`~latentpriv.runs.invert.Inverter`), for
  ``invert FILE...`` and folders.
* :mod:`latentpriv.runs.privatize` – the privatize task (:class:`~latentpriv.runs.privatize.Privatizer`),
  for ``privatize FILE`` and folders.
* :mod:`latentpriv.runs.generate` – latents (or seeded samples) -> images (``generate``).
* :mod:`latentpriv.runs.sweep` – one latent -> a grid of accounted releases over epsilon (``sweep``).
* :mod:`latentpriv.runs.distributed`, :mod:`latentpriv.runs.allocator` – torchrun processes, host memory.
"""
