"""What users run on a net: inspect, predict (one image or a folder), detect, the preprocessing they share."""
