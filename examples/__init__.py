"""Apps to run under `safenet chaos run app` (docs/app-chaos.md)."""
