"""``python -m muonjax.bench``: the orthogonalization benchmark CLI (:func:`muonjax.bench.cli.main`)."""

from muonjax.bench.cli import main

raise SystemExit(main())
