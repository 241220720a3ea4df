"""Resource pools: ResourcePolicy placement of workflow pods into ordered subsets, with exact counts across replicas."""
