from claude_gateway.cli import main

raise SystemExit(main())
