"""The artifact store: immutable, content-addressed stage outputs with manifests, and run records.

`protocol.Store` is what the rest of the code uses; `local.ArtifactStore` keeps artifacts in a
directory, `remote.RemoteArtifactStore` publishes them to an fsspec URL (s3://, gs://) and works
on a local copy, and `remote.open_store` picks one from the config. The modules they share:
`artifact` (the artifact, its errors and names), `base` (ids and `create`, written once),
`checks` (the manifest and file checks), `refs` (artifact references for quarantine and gc).
"""
