from edgecache.cli import main

raise SystemExit(main())
