from janus_policy.cli import main

raise SystemExit(main())
