"""Policy: YAML rule sets, loaded with positions, linted, compiled to an
engine-neutral form, and evaluated by the rules engine."""
