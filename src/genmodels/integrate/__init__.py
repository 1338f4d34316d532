"""genmodels.integrate"""
