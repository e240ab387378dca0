"""Inter-store settlement (门店结算): who owes whom when a benefit funded by one party is used at another."""
