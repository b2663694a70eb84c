"""Where a sweep writes and reads: the storage root (local, NFS, S3, GCS), each stage's
artifact layout, pretrained weights of frozen networks, and model construction from config."""
