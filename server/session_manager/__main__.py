from session_manager.cli import main

raise SystemExit(main())
