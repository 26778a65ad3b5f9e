"""Operations around the engine: building a patch from a model and a debugging set, MLflow tracking
and registry, serving, and DVC workspaces for profiles."""
