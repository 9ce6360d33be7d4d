"""The local inference service component: one model, loaded once, served over a Unix socket."""
