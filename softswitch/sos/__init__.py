"""The 112 / emergency number pool of door intercoms: cities, pool numbers, leases."""
