# MySQL/MariaDB through PyMySQL (pure Python) when it is installed and mysqlclient is not.
try:
    import MySQLdb  # noqa: F401
except ImportError:
    try:
        import pymysql

        pymysql.install_as_MySQLdb()
    except ImportError:
        pass

# The Celery app is loaded with Django, so that the similarity tasks bind to it.
from workers import celery_app

__all__ = ["celery_app"]
