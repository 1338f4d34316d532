"""genmodels.models"""
