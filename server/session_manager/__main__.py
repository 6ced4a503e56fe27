from session_manager.entry import main

raise SystemExit(main())
