from muonjax.cli import main

raise SystemExit(main())
