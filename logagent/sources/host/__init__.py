"""The host source: psutil samples every N seconds, as Telegraf-shaped JSON or Influx lines."""
