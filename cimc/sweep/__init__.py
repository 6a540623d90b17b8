"""Design-space exploration: `cimc sweep` (an Optuna study over arch fields and compiler
options). One concern per module: space (SPACE.toml), trial (one compile + cost), executors
(inline, process pool, Ray), study (the ask-run-tell loop and its storage), outputs (table,
Pareto front, sensitivity), plots."""
