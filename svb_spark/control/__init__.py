"""The driver's control plane during a fit: one TCP listener, the hello board, the model
inbox, live progress, and the signing they share."""
