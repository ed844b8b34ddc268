from emtm.cli import main

raise SystemExit(main())
