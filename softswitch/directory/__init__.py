"""Who lives behind a door: intercom panels, flats and the devices that ring for a flat."""
