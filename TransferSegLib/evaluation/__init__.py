"""How good a prediction is: metrics, evaluation of files, transfer experiments."""
