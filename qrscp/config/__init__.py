"""What the user configured: the CTN configuration file, ``-xf`` association profiles, the command-line settings."""
