"""In-repo plugins: one folder each, registered as kartoteka.plugins entry points."""
