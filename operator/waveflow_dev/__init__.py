"""Development tools, installed in neither image: the reference backend, the demo, audio
synthesis and the S3/SQS emulator.

``pip install -e '.[demo]'`` brings their dependencies (moto's server, jsonschema); ``dev``
includes it. The ``waveflow`` CLI imports this package only for ``waveflow demo`` and
``waveflow dev-backend``, and says which extra to install when it is missing. The Dockerfiles
copy only ``jobimage/`` and ``operator/waveflow_operator``, so none of this ships.

- :mod:`.backend`: ``waveflow dev-backend``, the NestJS backend's side of the contract;
- :mod:`.validation`: its 400s, from the contract's JSON Schemas;
- :mod:`.demo`, :mod:`.demo_samples`, :mod:`.demo_report`, :mod:`.players_page`:
  ``waveflow demo``;
- :mod:`.emulator`: moto on loopback and production-shaped queues (the demo and the tests);
- :mod:`.synth`: deterministic audio in every supported format (tests, demo, benchmarks).
"""
