"""genmodels.distributions"""
