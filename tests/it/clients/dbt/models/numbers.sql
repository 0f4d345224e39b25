{{ config(materialized='table') }}
select id, name, id * 10 as score from {{ ref('stg_numbers') }}
