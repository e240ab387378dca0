"""Service packages (次卡 / 服务权益): sold or granted with N uses and an expiry, used at any store that
offers the service, unused uses refunded by the package's rule."""
