-- The demo's replication user (least privileges) and a table the writer fills.
CREATE USER IF NOT EXISTS 'bridge'@'%' IDENTIFIED WITH mysql_native_password BY 'bridge';
GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'bridge'@'%';
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  customer VARCHAR(64) NOT NULL,
  amount DECIMAL(12, 2) NOT NULL,
  status ENUM('new', 'paid', 'shipped') NOT NULL DEFAULT 'new',
  updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
);
