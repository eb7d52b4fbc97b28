"""The study: search spaces, trials, Ray Tune wiring, tracking, results, reports and the CLI."""
