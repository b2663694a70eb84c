"""The sweep: one point's stages (`pipeline`), Ray Tune over points (`tune`), stage locks, the
live view (`progress`), MLflow nesting (`tracking`) and the dry-run plan (`plan`)."""
