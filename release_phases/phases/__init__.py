"""The release's story: one pytest module per phase, run in order by the plugin."""
