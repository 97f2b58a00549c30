"""What runs inside environments: the Runtime API served to them and the runtimes (bootstraps) they run."""
