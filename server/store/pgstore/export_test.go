package pgstore

import "context"

// PlanCacheMode returns plan_cache_mode as the store's pooled connections
// have it.
func PlanCacheMode(ctx context.Context, s *Store) (string, error) {
	var mode string
	err := s.pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode)
	return mode, err
}
