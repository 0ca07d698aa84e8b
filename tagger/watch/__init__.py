"""`tagger watch`: the daemon, its observers, settling, intake, status file and sd_notify."""
