"""What every case group shares: processes and sides, the registry, the table and the JSON."""
