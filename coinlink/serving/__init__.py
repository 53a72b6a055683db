"""How ``coinlink serve`` runs and stops its processes: the main process's manager, each
worker's drain on SIGTERM, and the listening socket and HTTP protocol that let a stopping
server finish every request it has accepted."""
