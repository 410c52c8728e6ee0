FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DEBUG=false python manage.py collectstatic --noinput
RUN useradd --system --home /app flowgate && mkdir -p /app/var && chown -R flowgate /app/var
USER flowgate
EXPOSE 8000
