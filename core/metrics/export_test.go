package metrics

import "time"

// SetScrapeTimeout changes c's bound of the OVS reads of one scrape.
func SetScrapeTimeout(c *AgentCollector, d time.Duration) { c.timeout = d }
