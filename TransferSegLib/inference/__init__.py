"""From a model folder and an image to a labelmap on the image's own grid."""
