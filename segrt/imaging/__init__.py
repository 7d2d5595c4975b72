"""segrt.imaging."""
