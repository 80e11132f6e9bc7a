-- One PostgreSQL server, three databases: the prediction log, Prefect's, MLflow's.
CREATE DATABASE prefect OWNER driftloop;
CREATE DATABASE mlflow OWNER driftloop;
