"""XMP sidecars: tagger's labels where other photo apps (digiKam, darktable, Immich,
Lightroom) read keywords, kept up to date as the daemon stores, moves and forgets photos."""
